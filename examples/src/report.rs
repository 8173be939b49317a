//! Drill and switch reports: a Markdown summary and a self-contained HTML page with an SVG timeline.
