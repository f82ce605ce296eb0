"""The networks: StyleGAN2 layers, the SGPN generator and discriminator, the coefficient regressor,
the shape prior, the SGPN restorer, and the retouching-reversal stages (FMAR, HFDG, the U-Net)."""
