"""What the tests share: tiny datasets and image files written in the official formats, runs of the
command line, callbacks injected into runs, the import graph of the package."""
