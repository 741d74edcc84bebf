package demo

// Common surnames in the rural southwest, most frequent first (the list is
// drawn from with a bias towards its head).
var surnames = []string{
	"李", "王", "張", "楊", "劉", "陳", "趙", "馬", "周", "吳",
	"羅", "何", "段", "普", "者", "孫", "朱", "胡", "郭", "林",
	"高", "黃", "蔣", "沈", "錢", "魯", "施", "葉", "蘇", "余",
}

// Given names by generation: the old, the middle-aged and the young have
// noticeably different names in the registers.
var (
	maleOld      = []string{"正華", "國富", "德明", "發財", "永福", "光榮", "文清", "世昌", "紹興", "家順", "有才", "金貴", "志高", "天福", "玉堂"}
	femaleOld    = []string{"秀英", "桂英", "玉蘭", "鳳英", "翠花", "桂芬", "素珍", "玉珍", "美蘭", "春蘭", "金鳳", "秀珍"}
	maleMiddle   = []string{"建國", "志強", "國華", "建平", "文明", "光明", "衛東", "海濤", "勇", "偉", "軍", "剛", "建華", "永剛", "春林", "學文"}
	femaleMiddle = []string{"麗華", "春梅", "小芳", "紅梅", "麗萍", "燕", "敏", "海燕", "艷芬", "麗", "慧", "英", "曉紅", "瓊芬"}
	maleYoung    = []string{"浩然", "宇航", "子軒", "俊杰", "澤宇", "一鳴", "明輝", "浩宇", "嘉豪", "梓睿", "思遠", "博文", "天佑"}
	femaleYoung  = []string{"欣怡", "子涵", "雨桐", "詩琪", "夢瑤", "思雨", "佳怡", "語嫣", "可欣", "雅婷", "婉清", "若曦"}
)
