"""The model catalogue: the specs' types (``models``), the table (``table``), regions and
hosts (``regions``), prices in USD (``pricing``) and the official rules checked before
anything is sent (``validation``)."""
