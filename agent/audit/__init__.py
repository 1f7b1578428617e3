"""The audit trail: every event, decision and action, chained and verifiable.

``records`` builds record bodies, ``writer.AuditWriter`` appends them,
``reader`` streams them back, ``verify`` checks the chain, ``query`` filters,
``why`` explains in sentences, ``compress`` gzips rotated files.
"""
