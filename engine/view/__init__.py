"""``lode view``: a local browser viewer of section stores and survey outputs."""
