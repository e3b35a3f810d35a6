"""Public modules that score scripts import: ``aml_request`` and ``aml_response``. Their paths never move."""
