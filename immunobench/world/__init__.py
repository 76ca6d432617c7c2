"""The embedded concept world: procedural renderer, captions, datasets."""
