"""Test support for fiber backends.

The contract suite in :mod:`fiber_core.testing.contract` is written once and
run against every backend. To run it against a backend of your own::

    pip install fiber-core my-fiber-backend pytest
    pytest --pyargs fiber_core.testing.contract --fiber-backend mybackend

``--fiber-backend`` may be repeated; set any configuration your backend needs
(an image, a namespace) through ``FIBER_*`` variables or ``.fiberconfig``.
"""
