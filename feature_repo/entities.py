"""Entities: the three keys every feature mart joins on (STYLE.md "One vocabulary").

The join key of each entity is the column name used in dbt, in the feature marts and in every
entity frame handed to Feast (``user_id``, ``item_id``, ``warehouse_id``), always a string.
"""

from feast import Entity, ValueType

# A shopper account. Views: user_rfm, user_activity.
user = Entity(
    name="user",
    join_keys=["user_id"],
    value_type=ValueType.STRING,
    description="Shopper account (dim_users.user_id)",
    tags={"owner": "data-platform"},
)

# A sellable unit (SKU). Views: item_stats, item_warehouse_demand.
item = Entity(
    name="item",
    join_keys=["item_id"],
    value_type=ValueType.STRING,
    description="Sellable unit / SKU (dim_items.item_id)",
    tags={"owner": "data-platform"},
)

# A fulfilment warehouse / region. View: item_warehouse_demand (with item).
warehouse = Entity(
    name="warehouse",
    join_keys=["warehouse_id"],
    value_type=ValueType.STRING,
    description="Fulfilment warehouse / region (dim_warehouses.warehouse_id)",
    tags={"owner": "data-platform"},
)
