"""The reproduction study: the paper's protocol and an honest one, images to docs/results.md."""
