"""The template preview: views.py (the page's endpoints), sandbox.py (rendering a job, in a
child process for a pasted template), assets/ (the page's HTML, script and style sheet).

Nothing is imported here: the sandbox's child process imports sandbox.py alone."""
