//! Unit tests of the election: the view, the decision trigger, commands.
