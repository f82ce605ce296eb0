"""Face retouching reversal (FRRffusion at the kit's scale): the synthetic retouch, retouched/raw
pairs, the two-stage pipeline and its results table."""
