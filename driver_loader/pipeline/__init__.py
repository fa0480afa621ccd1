"""Orchestration: from settings to a plan (resolve), and the install pipeline over the edges."""
