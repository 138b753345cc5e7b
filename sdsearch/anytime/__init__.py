"""Anytime inference: one multi-exit model that stops early on easy inputs.

A self-distilled network has several trained exits. Deployed as an anytime model it runs the
cheapest exit first and stops as soon as an exit is confident (BranchyNet, Teerapittayanon et al.,
ICPR 2016, https://arxiv.org/abs/1709.01686), so the mean cost per image falls well below the
deepest exit's while accuracy stays close. The modules, in the order a deployment uses them:

- :mod:`~sdsearch.anytime.policy`: the exit rule, expected MACs, threshold sweeps and calibration
  on plain arrays (``exit_indices``, ``anytime_outcome``, ``sweep``, ``calibrate``), and the stored
  report (``anytime_report``);
- :mod:`~sdsearch.anytime.model`: every exit's confidence and correctness on a split
  (``exit_statistics``), each trunk segment's and head's MACs (``anytime_cost``), calibration of a
  trained network (``calibrate_network``) and the deployable ``AnytimeModel``;
- :mod:`~sdsearch.anytime.onnx`: its ONNX export, one ``If`` per exit;
- :mod:`~sdsearch.anytime.view`: how ``show --anytime`` draws a report (plot and table).

The worst case, every exit running, is a deploy cost like any other: :mod:`sdsearch.cost.worst_case`.

Example:
    >>> from sdsearch.anytime.model import AnytimeModel, anytime_cost, exit_statistics
    >>> from sdsearch.anytime.policy import calibrate
    >>> stats = exit_statistics(net, data.x_val, data.y_val, mean=data.mean, std=data.std)  # doctest: +SKIP
    >>> cost = anytime_cost(net, input_shape=(1, 8, 8))                                    # doctest: +SKIP
    >>> cal = calibrate(stats, cost, accuracy_drop=0.005)                                   # doctest: +SKIP
    >>> model = AnytimeModel(net, cal.thresholds).eval()                                    # doctest: +SKIP
"""
