"""The engine: containers from images, one supervisor per node, the runtime as a library."""
