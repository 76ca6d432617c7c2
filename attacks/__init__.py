"""Built-in attacks, one file each; every module here is imported on discovery."""
