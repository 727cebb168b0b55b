"""The one test kit: the CLI runner (cli), layouts built by hand and fixture copies (layouts),
independent views of a tree (tree), the S3 environment (s3), retention images (retention)."""
