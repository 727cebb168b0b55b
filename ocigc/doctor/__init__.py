"""``ocigc doctor``: is the file system that holds PATH fit for ocigc's locks and deletions?"""
