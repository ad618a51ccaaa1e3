"""Where artifacts are kept: the Storage interface, the disk cache, an S3 bucket, usage and cleanup."""
