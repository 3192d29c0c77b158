"""SynthMath, the embedded corpus: problem families with the class of every number they write
(``families``), reasoning demonstrations and arithmetic drills (``think``) and the ``rpt-data generate``
command's writer (``writer``)."""
