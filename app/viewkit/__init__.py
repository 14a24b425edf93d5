"""What the views share: the per-session target set with its undo (session), the pictures (overlay),
hit testing (picking), what the UI says about the model (model_info) and write-once picture files
(cache_files). Nothing here knows the store."""
