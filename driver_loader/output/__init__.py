"""What leaves the process on stderr: structured logs and progress, both through the one redactor."""
