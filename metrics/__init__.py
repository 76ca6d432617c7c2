"""Built-in similarity backends and metric formulas; every module here is imported on discovery."""
