"""The incident console in the browser (``/ui``): server-rendered pages, live updates, login and roles."""
