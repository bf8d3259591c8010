"""Reports of a run directory: the figures (``figures``) and the HTML/Markdown/JSON report sent to the
trackers (``builder``)."""
