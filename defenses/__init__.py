"""Built-in defenses, one file each; every module here is imported on discovery."""
