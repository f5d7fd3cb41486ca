"""What clients need to know about this installation before they show anything."""
