"""Small helpers shared by core and plugins: DNS names, selectors, log writing."""
