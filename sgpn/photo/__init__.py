"""Real photos: face detection, alignment to the release's template, whole-photo restore with
the feathered paste-back, and the release's weights."""
