"""sgpn: a runnable, teachable re-implementation of SGPN (CVPR 2022).

Blind face restoration that fuses a 3D face shape prior (a 257-d 3DMM vector and its render)
with a StyleGAN2 generative prior through Adaptive Feature Fusion Blocks.
"""

__version__ = "0.1.0"
