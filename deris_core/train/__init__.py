"""Training: Hungarian matching, the DeRIS losses, non-referent sample conversion, the loop."""
