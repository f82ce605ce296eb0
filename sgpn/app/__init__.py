"""What people click: the coefficient explorer and mask picker widgets, the Voila page, and the
drawing helpers the notebooks use."""
