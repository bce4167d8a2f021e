"""Browser tests: the demo page and notify-client.js in a real headless Chromium."""
