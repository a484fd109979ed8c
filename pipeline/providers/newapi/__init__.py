"""New API gateway (OpenAI-style ``/v1/video/generations``): adapter and codec."""
