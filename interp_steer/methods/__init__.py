"""Steering methods. Each produces a :class:`~interp_steer.steering.SteeringVector`."""
