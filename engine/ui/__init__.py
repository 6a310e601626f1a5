"""The dashboard's page, script and styles (served by streamjobs.api.ui)."""
