"""A run is a folder: its layout (``layout``: every file and stage name), how it is written
(``folder``: atomic files, the stage record, scratch work) and how a finished one is read back
(``result``)."""
