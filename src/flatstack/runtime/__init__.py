"""flatrun: the OCI runtime.  Nothing here knows what an image or an app is."""
