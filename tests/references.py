"""The independent references the monitoring is checked against, evidently and nannyml, imported for the tests.

Both (evidently 0.7, nannyml 0.13) import pandas.core.dtypes.common.infer_dtype_from_object, which pandas 3 removed.
It is given back before they are imported; neither the PSI nor CBPE code paths the tests call use it.
"""

import pandas.api.types
import pandas.core.dtypes.common

if not hasattr(pandas.core.dtypes.common, "infer_dtype_from_object"):
    pandas.core.dtypes.common.infer_dtype_from_object = lambda dtype: pandas.api.types.pandas_dtype(dtype).type

import evidently  # noqa: E402
import nannyml  # noqa: E402

__all__ = ["evidently", "nannyml"]
