package loader

// Seams for the external tests.
var (
	CanUpgradeAllowFrom = canUpgradeAllowFrom
	UpgradeAllowFrom    = upgradeAllowFrom

	CanUpgradeBindingStats = canUpgradeBindingStats
	UpgradeBindingStats    = upgradeBindingStats
)
