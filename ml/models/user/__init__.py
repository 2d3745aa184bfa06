"""User behaviour models.

propensity.py  purchase propensity: LightGBM over the Feast service (the logistic regression when
               it wins), RFM-rule and logistic references, batch scoring with explanations
sequence.py    propensity_gru: a GRU over a user's last N events (dbt export of event sequences)
cart.py        cart abandonment: the conversion curve by hours since an add, at-risk carts
"""
