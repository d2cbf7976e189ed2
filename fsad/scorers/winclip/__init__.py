"""WinCLIP / WinCLIP+ (Jeong et al., CVPR 2023): tensor maths in ``torch_model``, context glue in ``scorer``."""
