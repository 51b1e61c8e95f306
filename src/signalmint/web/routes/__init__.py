"""HTTP routes: the public pages, the JSON API and operations endpoints."""
