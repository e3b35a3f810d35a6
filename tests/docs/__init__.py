"""Tests of the documentation site, the deployment files and the examples."""
