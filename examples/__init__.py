"""Examples written as a user would write them. With the repository root on PYTHONPATH their
classes can be named in a config by import path, e.g. examples.sign_codec:SignCompressor."""
