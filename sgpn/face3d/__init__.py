"""The 3D face: the 257-value coefficient layout, the camera, the morphable model (the Basel Face
Model's file or the built-in open model) and the renderer."""
