"""Evidence tools: image loading, EXIF, OCR, language/script identification, text clues."""
