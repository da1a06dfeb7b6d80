"""runtime-spec documents: config validation, the default spec, the features document.

Import the submodules directly (``flatstack.oci.config`` is on the runtime's hot
path; this package imports nothing).
"""
