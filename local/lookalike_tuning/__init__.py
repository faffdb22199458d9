"""Tuning: learn a catalogue's own notion of "looks alike" (contrastive learning on a frozen backbone).

Build-time only: never shipped in a Lambda layer."""
