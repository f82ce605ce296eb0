"""Evaluation: metrics (PSNR, SSIM, LPIPS, FID/KID, NME, vertex error), the standard Inception,
test sets, results tables, the paper's claims, restoration bounds, AFFB statistics and shape
accuracy, and the ``sgpn evaluate`` command."""
