"""The process around the server: twistd glue, the supervisor (reload, signals), systemd notify."""
