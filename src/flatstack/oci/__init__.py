"""runtime-spec documents: validation, the default spec, the features document."""
