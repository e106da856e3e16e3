"""Apps and server configurations the tests serve: imported in process, or named on the
command line of a real server (``tests.support.apps.<module>:app``), and Django URL
configurations and middleware named in settings."""
