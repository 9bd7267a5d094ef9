"""Re-implementations of the approaches kdekit replaces, for like-with-like timings."""
